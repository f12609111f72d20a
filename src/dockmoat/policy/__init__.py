"""The policy: decisions on parsed requests, organised by Engine API resource."""
