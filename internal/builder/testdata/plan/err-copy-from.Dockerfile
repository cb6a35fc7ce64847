FROM base
COPY --from=build /out /app
