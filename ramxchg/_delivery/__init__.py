"""Getting items to consumers: subscriptions, filesystem notifiers, the gate for foreign files."""
