# runtime/node/: nodes joined through NATS (nats.c)
list(APPEND TROUPE_SOURCES
  runtime/node/node.c   # the service: connection, peers, liveness
  runtime/node/wire.c   # the frame codec
  runtime/node/route.c  # frames in and out, relations a lost node breaks
  runtime/node/names.c  # global names (JetStream key-value)
  runtime/node/groups.c # groups across nodes (queue groups)
  runtime/node/spawn.c  # remote spawn, supervisor children on other nodes
)
