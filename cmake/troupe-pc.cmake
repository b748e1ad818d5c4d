# Writes troupe.pc at install time (run by install(CODE) in CMakeLists.txt),
# so the prefix in it is the one actually installed to, also with
# `cmake --install <build> --prefix <dir>`. In: TROUPE_PC_IN, TROUPE_PC_OUT,
# TROUPE_PC_VERSION, TROUPE_PC_LIBDIR_REL, TROUPE_PC_INCLUDEDIR_REL,
# TROUPE_PC_REQUIRES_PRIVATE, TROUPE_PC_LIBS_PRIVATE; CMAKE_INSTALL_PREFIX
# is set by cmake --install.
set(TROUPE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(_d LIBDIR:exec_prefix INCLUDEDIR:prefix)
  string(REPLACE ":" ";" _d "${_d}")
  list(GET _d 0 _name)
  list(GET _d 1 _base)
  if(IS_ABSOLUTE "${TROUPE_PC_${_name}_REL}")
    set(TROUPE_PC_${_name} "${TROUPE_PC_${_name}_REL}")
  else()
    set(TROUPE_PC_${_name} "\${${_base}}/${TROUPE_PC_${_name}_REL}")
  endif()
endforeach()
configure_file("${TROUPE_PC_IN}" "${TROUPE_PC_OUT}" @ONLY)
