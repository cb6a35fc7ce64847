FROM base
COPY a b /app
