struct Service;

impl Service {
    #[bindery::function]
    async fn handle(&self, text: String) -> String {
        text
    }
}

fn main() {}
