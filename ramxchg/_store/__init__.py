"""The on-disk protocol of one channel: layout, publish, scan, state files, groups, pool,
retention."""
