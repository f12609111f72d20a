#!/bin/sh
# The "application": greets whoever is named (default: world).
echo "hello, ${1:-world}"
