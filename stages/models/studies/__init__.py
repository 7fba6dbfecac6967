"""One module per study: its models, each registered under the name params.yaml uses."""
