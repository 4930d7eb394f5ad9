"""Starts a thread when imported: a zygote that preloads this must not fork."""
import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def main():
    return 0
