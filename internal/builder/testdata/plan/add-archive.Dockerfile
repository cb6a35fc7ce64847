FROM base
# A local archive is unpacked into the destination (Docker semantics).
ADD --chown=user:user vendor.tar.gz /opt/vendor/
ADD notes.txt /etc/notes.txt
