"""Sets an FLWR_ variable when imported, as a library may: a zygote that preloads this still
serves warm starts, and its apps see the variable as a cold import would have set it."""
import os

os.environ["FLWR_PROBE_ADDED"] = "by-import"


def main():
    return 0
