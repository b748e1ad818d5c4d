# supervisor/: OTP supervisors, on the public API only
list(APPEND TROUPE_SOURCES
  supervisor/supervisor.c
  supervisor/child.c
  supervisor/job.c
  supervisor/restart.c
  supervisor/request.c
)
