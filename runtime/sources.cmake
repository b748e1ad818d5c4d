# runtime/: the core's loop half (schedulers, timers, the service door),
# then one folder per service, each reaching the core through
# runtime/service.h only.
list(APPEND TROUPE_SOURCES
  runtime/alloc.c
  runtime/error.c
  runtime/runtime.c
  runtime/sched.c
  runtime/world.c
  runtime/monitor.c
  runtime/namereg.c # named tables of the services
  runtime/signals.c
  runtime/timer.c
  runtime/service.c # the door services use (runtime/service.h)
  runtime/host.c    # the isolated worker's door (runtime/host.h)
)
include(${CMAKE_CURRENT_LIST_DIR}/io/sources.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/isolate/sources.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/observe/sources.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/node/sources.cmake)
