"""Event connectors (cron, NATS subjects, webhooks, HTTP routes); they depend on the Invoker only."""
