"""The appliance's bundled Flower app: one ServerApp, ClientApps per use case."""
