# A static site served by busybox httpd on port 8080, as the non-root account.
RUN set -e; \
    mkdir -p /srv/www; \
    printf '<!doctype html><title>edge</title><p>factory edge proxy ok</p>\n' > /srv/www/index.html; \
    printf '#!/bin/sh\nexec httpd -f -p ${PORT:-8080} -h /srv/www\n' > /opt/factory/bin/serve; \
    chmod 0755 /opt/factory/bin/serve; \
    printf 'FACTORY_HTTPD_VERSION=0.1.0\n' >> /etc/factory-release
EXPOSE 8080
