# actors/: the core's actor half (table, messages, sends, signals, calls)
list(APPEND TROUPE_SOURCES
  actors/table.c
  actors/msg.c
  actors/node_cache.c
  actors/actor.c
  actors/send.c
  actors/signal.c
  actors/pidset.c # link sets
  actors/call.c
  actors/foreign.c # tp_runtime_call: blocking calls from foreign threads
  actors/names.c
  actors/payload.c
  actors/info.c # actor info and counters for observers
  actors/remote.c # sends to pids of other nodes
)
