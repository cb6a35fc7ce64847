FROM base
COPY --chmod=rwx a /a
