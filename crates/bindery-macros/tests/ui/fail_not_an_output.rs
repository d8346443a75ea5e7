struct Report;

#[bindery::function]
async fn report(_text: String) -> Report {
    Report
}

fn main() {}
