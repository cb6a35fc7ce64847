FROM base
RUN apt-get install -y curl
CMD [ "python3", "-m", "http.server"
