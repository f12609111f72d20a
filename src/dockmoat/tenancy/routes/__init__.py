"""Tenancy by resource: one route table (table.py), one module per Engine API resource."""
