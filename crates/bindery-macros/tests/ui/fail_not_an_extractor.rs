struct Connection;

#[bindery::function]
async fn store(_connection: Connection) {}

fn main() {}
