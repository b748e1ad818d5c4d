# supervisor/: OTP supervisors, on the public API only
list(APPEND TROUPE_SOURCES supervisor/supervisor.c)
