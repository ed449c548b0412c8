const { Client } = require('pg');
(async () => {
  const client = new Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  const { rows } = await client.query('SELECT count(*) FROM orders WHERE created_at > now() - interval \'1 day\'');
  console.log(rows[0].count);
  await client.end();
})();
