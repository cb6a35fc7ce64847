FROM base AS build
RUN make
