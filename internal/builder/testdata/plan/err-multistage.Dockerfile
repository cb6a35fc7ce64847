FROM base
FROM base
