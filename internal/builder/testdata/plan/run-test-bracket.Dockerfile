FROM base
RUN [ -f /etc/hostname ] && echo has-hostname
CMD ["sleep", "infinity"]
