"""Typed views of Docker Engine API requests, shared by routing, policy and tenancy."""
