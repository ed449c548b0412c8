import postgres from "npm:postgres";

const sql = postgres(Deno.env.get("DATABASE_URL")!);
await sql`TRUNCATE TABLE jobs`;
await sql.end();
