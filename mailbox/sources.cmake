# mailbox/: the FIFO, the MPSC queue and the scheduling flag (knows no actors)
list(APPEND TROUPE_SOURCES mailbox/mpscq.c)
