"""Policy rules, one module per Engine API resource."""
