FROM base
RUN --mount=type=cache,target=/root/.cache pip install x
