# runtime/io/: socket actors and the blocking pool
list(APPEND TROUPE_SOURCES runtime/io/net.c runtime/io/pool.c)
