// Package ops tests how sbx is installed and run as a service: `sbx
// version`, `make install` and the systemd unit, the Debian package (built
// with `make deb`, inspected, installed with dpkg into a throwaway root and
// run the way its unit runs it) and the OCI image (`make image`).
//
// They run `make` in the repository, so they build what they test.
package ops
