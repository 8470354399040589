"""Driver contract suite: what every target driver must honour (run by ``shipei gate``)."""
