#[bindery::function]
fn uppercase(text: String) -> String {
    text.to_uppercase()
}

fn main() {}
