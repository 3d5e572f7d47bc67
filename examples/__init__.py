"""Example hosts that show (and let the tests prove) how a host application integrates the notifier."""
