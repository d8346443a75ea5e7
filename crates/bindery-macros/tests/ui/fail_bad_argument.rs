#[bindery::function(nmae = "shout")]
async fn uppercase(text: String) -> String {
    text.to_uppercase()
}

#[bindery::function(name = "a|b")]
async fn piped(text: String) -> String {
    text
}

fn main() {}
