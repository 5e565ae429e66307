"""Book tooling: execute the notebooks with papermill, build the ledger and report, build the HTML."""
