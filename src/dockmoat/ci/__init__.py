"""CI tooling: run a job, generate configs, audit configs, diagnose failures."""
