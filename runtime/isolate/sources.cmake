# runtime/isolate/: isolated workers (proxy, worker process, frames, pools)
list(APPEND TROUPE_SOURCES
  runtime/isolate/frame.c
  runtime/isolate/isolate.c
  runtime/isolate/worker.c
  runtime/isolate/pool.c
)
