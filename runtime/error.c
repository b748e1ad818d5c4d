#include "troupe.h"

const char *tp_strerror(int err)
{
    switch (err) {
    case TP_OK: return "success";
#define TP_ERR_CASE_(name, value, text)                                        \
    case name: return text;
        TP_ERRORS(TP_ERR_CASE_)
#undef TP_ERR_CASE_
    default: return "unknown error";
    }
}
