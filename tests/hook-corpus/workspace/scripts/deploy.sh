#!/bin/sh
set -e
npm run build
rsync -az dist/ deploy@web1:/srv/www/app/
