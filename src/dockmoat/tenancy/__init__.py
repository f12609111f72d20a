"""Per-job tenancy on a shared daemon: ownership, name spaces, clean-up."""
