# A Dockerfile using everything sbx supports.
ARG BASE=e2bdev/base
FROM ${BASE}:latest
ARG VERSION=1.2
ARG OVERRIDDEN=default
ENV APP_HOME=/opt/app \
    GREETING="hello world"
ENV LEGACY old style value
WORKDIR $APP_HOME
RUN apt-get update && \
    apt-get install -y curl
RUN ["python3", "-c", "print('json form')"]
COPY --chown=user:user app.py requirements.txt ./
ADD --chmod=755 scripts/ /usr/local/bin/
USER user
EXPOSE 8080
LABEL org.example=1
ENTRYPOINT ["python3"]
CMD ["-m", "http.server", "8080"]
