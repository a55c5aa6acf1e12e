# A non-root service account and no setuid/setgid files: the least a service image needs.
RUN set -e; \
    grep -q '^app:' /etc/passwd || echo 'app:x:10001:10001:app:/home/app:/bin/sh' >> /etc/passwd; \
    grep -q '^app:' /etc/group || echo 'app:x:10001:' >> /etc/group; \
    mkdir -p /home/app && chown 10001:10001 /home/app; \
    find / -xdev -perm /6000 -type f -exec chmod a-s {} + 2>/dev/null || true; \
    mkdir -p /tmp && chmod 1777 /tmp
