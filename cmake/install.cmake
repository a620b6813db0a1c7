# install.cmake -- what `cmake --install` (and `make install`) puts where.
#
# Included from the top-level CMakeLists.txt after the targets exist.  The
# layout follows GNUInstallDirs so distributions can redirect it; the
# pkg-config file is prefix-relative and the executables find the library
# through $ORIGIN, so a tree staged with DESTDIR works where it lies.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

option(RRPC_INSTALL_EXAMPLES "Install the calc-server and calc-client examples" ON)

set(RRPC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/rrpc)

install(TARGETS rrpc EXPORT rrpcTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_SOURCE_DIR}/include/rrpc/rrpc.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/rrpc)

# Executables: the CLI, and the examples unless turned off.
set(rrpc_installed_programs "")
if(TARGET rrpc_cli)
  list(APPEND rrpc_installed_programs rrpc_cli)
endif()
if(RRPC_INSTALL_EXAMPLES)
  foreach(example calc-server calc-client)
    if(TARGET ${example})
      list(APPEND rrpc_installed_programs ${example})
    endif()
  endforeach()
endif()
if(rrpc_installed_programs)
  # A library in a system directory is found by the loader anyway (and
  # distributions frown on a redundant RPATH); elsewhere, e.g. /usr/local
  # or /opt/rrpc, the programs look next to themselves.
  list(FIND CMAKE_C_IMPLICIT_LINK_DIRECTORIES "${CMAKE_INSTALL_FULL_LIBDIR}" rrpc_system_libdir)
  if(rrpc_system_libdir EQUAL -1)
    file(RELATIVE_PATH rrpc_bin_to_lib
      ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
    set_target_properties(${rrpc_installed_programs} PROPERTIES
      INSTALL_RPATH "$ORIGIN/${rrpc_bin_to_lib}")
  endif()
  install(TARGETS ${rrpc_installed_programs} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# pkg-config: prefix=${pcfiledir}/<this many ..> keeps the file relocatable.
file(RELATIVE_PATH RRPC_PC_RELATIVE_PREFIX
  ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" RRPC_PC_RELATIVE_PREFIX "${RRPC_PC_RELATIVE_PREFIX}")
configure_file(${CMAKE_SOURCE_DIR}/cmake/rrpc.pc.in ${CMAKE_BINARY_DIR}/rrpc.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/rrpc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# CMake package: rrpcConfig.cmake, its version file and the exported target.
install(EXPORT rrpcTargets NAMESPACE rrpc:: DESTINATION ${RRPC_CMAKE_DIR})
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/rrpcConfig.cmake.in
  ${CMAKE_BINARY_DIR}/rrpcConfig.cmake INSTALL_DESTINATION ${RRPC_CMAKE_DIR})
# 0.x releases promise nothing across minor versions, hence SameMinorVersion.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/rrpcConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/rrpcConfig.cmake ${CMAKE_BINARY_DIR}/rrpcConfigVersion.cmake
  DESTINATION ${RRPC_CMAKE_DIR})

# Man pages: every docs/man/*.N goes to man/manN.  Pages that only hold a
# ".so" line make a family's other names find the shared page.
file(GLOB rrpc_man_pages CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/man/*.[1-8])
foreach(page ${rrpc_man_pages})
  string(REGEX MATCH "[1-8]$" section ${page})
  install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()
