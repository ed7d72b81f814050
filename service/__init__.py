"""The Secateurs service: FastAPI app, SQL store, scheduler, dashboard and the REST client
(the command line, which calls into it, is the `secateurs` package)."""
