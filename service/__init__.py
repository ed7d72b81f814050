"""The Secateurs service: FastAPI app, SQL store, scheduler, dashboard and the CLI."""
