# runtime/node/: nodes joined through NATS (nats.c)
list(APPEND TROUPE_SOURCES runtime/node/node.c runtime/node/wire.c
  runtime/node/route.c)
