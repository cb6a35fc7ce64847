FROM base
RUN true
VOLUME /data
