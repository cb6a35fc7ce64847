FROM base
RUN ["apt-get", "install"
