# runtime/observe/: the tree dump and the metrics endpoint
list(APPEND TROUPE_SOURCES runtime/observe/dump.c runtime/observe/metrics.c)
