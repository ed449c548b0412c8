import postgres from "npm:postgres";

const sql = postgres(Deno.env.get("DATABASE_URL")!);
console.log(await sql`SELECT count(*) FROM orders`);
await sql.end();
