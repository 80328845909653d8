# `cpack -G DEB` in the build directory: build/shapeproxy_<version>_<arch>.deb
# with /usr/bin/shapeproxy, the systemd unit (dedicated user, settings from
# /etc/default/shapeproxy, hardening, Restart=on-failure) and that settings
# file. Library dependencies come from dpkg-shlibdeps (dpkg-dev).
include(GNUInstallDirs)
install(TARGETS shapeproxy RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT server)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/shapeproxy.service
        DESTINATION lib/systemd/system COMPONENT server)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/shapeproxy.default
        DESTINATION /etc/default RENAME shapeproxy COMPONENT server)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME shapeproxy)
set(CPACK_PACKAGE_VENDOR shapeproxy)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Live shapes of a PostgreSQL database over the Electric shape protocol")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_CMAKE_PROJECTS "${CMAKE_BINARY_DIR};shapeproxy;server;/")
set(CPACK_STRIP_FILES ON)  # debug info stays in build/
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "shapeproxy developers <shapeproxy@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_SOURCE_DIR}/packaging/postrm
    ${PROJECT_SOURCE_DIR}/packaging/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
