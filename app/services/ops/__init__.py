"""Operating the service: the audit log, notifications and readiness."""
